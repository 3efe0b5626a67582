"""The destinations that ship with the worker: the local archive, CDCS, eLabFTW, LabArchives."""
