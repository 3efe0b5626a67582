"""The outcome bridge: each finished run written into NexusLIMS's own database."""
