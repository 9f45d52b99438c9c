"""Usage metering: the ledger that counts usage exactly once, durably, in group commits."""
