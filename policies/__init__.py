"""Decision policies for dcsim: rule-based baselines (and, later, learning policies)."""
