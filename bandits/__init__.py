"""Online bandit posteriors, exploration and off-policy evaluation (pure logic, no I/O clients)."""
