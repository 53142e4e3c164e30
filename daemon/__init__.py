"""Everything in dropreel that touches the world: watcher, scheduler, providers, CLI."""
