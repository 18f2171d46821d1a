"""What an allowed request receives: static secrets or GitHub credentials."""
