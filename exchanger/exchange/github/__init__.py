"""GitHub exchanges: runner tokens, JIT runner configs, installation tokens."""
