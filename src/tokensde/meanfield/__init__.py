"""The mean-field limit: the conditional law ``mu_t`` of the tokens given the common noise (pure; no files, no CLI)."""
