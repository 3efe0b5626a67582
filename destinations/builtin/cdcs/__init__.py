"""CDCS: the record uploaded as a data document of its template, found again by session."""
