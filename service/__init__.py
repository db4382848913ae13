"""exitserve: serving for multi-exit networks."""
