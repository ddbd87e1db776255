"""The page of `tpdump serve` (self-contained: no external assets)."""
