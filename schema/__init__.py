"""Resources declared in protobuf: loaded, stored and served with no code (docs/schema.md)."""
