"""Teacher agents: each is a prompt template, a parser and a policy, run over records concurrently."""
