"""Real servers that stand in for the services exchanger talks to."""
