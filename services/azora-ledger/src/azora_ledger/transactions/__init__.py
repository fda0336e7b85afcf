"""New transactions (single, coalesced, batch), their reads, and the chart of categories."""
