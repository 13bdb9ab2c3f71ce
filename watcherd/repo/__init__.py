"""Repositories: URL rules, the git runner, the fetch cache and results repos, job workspaces."""
