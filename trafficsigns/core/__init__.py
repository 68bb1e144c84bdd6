"""The spine every stage and tool shares: params, errors, paths, atomic writes, the command-line shell."""
