"""Everything that knows upstream's TF1 variable names lives here."""
