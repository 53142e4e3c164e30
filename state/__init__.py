"""The pure core of dropreel: the job life cycle, the clock, and the store.

Nothing in this package touches the outside world other than the database: it never
imports `daemon`, httpx, watchfiles or apscheduler (a test keeps it so).
"""
