"""The storage seam: what listing asks of a server, and the stores that answer it."""
