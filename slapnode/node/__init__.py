"""The node side: enrollment now; the agent (software, instances) next."""
