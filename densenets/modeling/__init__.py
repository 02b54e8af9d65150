"""Models. Importing this package registers every backbone, neck, head and meta-architecture."""
