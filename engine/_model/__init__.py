"""Values and documents: errors, types, flow documents, run records."""
