"""Jobs: safe submission paths, importing finished job folders, and the worker."""
