"""Stand-ins of the stacks a user would pick instead of Mercato (scenario 1)."""
