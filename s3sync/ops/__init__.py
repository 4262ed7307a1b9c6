"""Operations on a running system (issue #7): `status`, `retry`, `backfill`.

Each works the same against the stacks in AWS (resources from the ECS stack's outputs) and against `s3sync local`
(resources by name on its control-plane endpoint); `context.resolve` finds them. Not part of the Lambda package: what
the functions also need (the finder, re-attempts, delete propagation) lives in `s3sync.transfer`.
"""
