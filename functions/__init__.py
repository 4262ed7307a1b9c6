"""Lambda entry points. Each module builds its collaborators once per cold start and delegates to
`s3sync.transfer`; the handler strings are in `s3sync.contract.HANDLERS`."""
