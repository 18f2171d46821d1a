"""Who is asking: the verified claims of a caller's token."""
