"""Regularisers (VAT, entropy, ...) as pure functions, and the method registry."""
