"""What the caller asks for, the policies, and the one engine that decides."""
