"""Data converters: Synapse raw -> datalist (+ TransUNet layout), synthetic CT phantoms."""
