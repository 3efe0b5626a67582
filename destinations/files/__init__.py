"""Reading the record and the files it names, on a caller's behalf and confined to their roots."""
