"""The runtime engine (boto3): planning, message schema, ledger, part copier, endpoints.

Everything here takes its clients and settings as arguments, so the same code runs in Lambda, in the ECS worker,
in `s3sync local` and in tests against local servers.
"""
