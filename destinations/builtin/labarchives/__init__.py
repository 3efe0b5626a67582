"""LabArchives: a signed API client, the notebook tree, cached folders and the export."""
