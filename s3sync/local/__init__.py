"""Local stand-ins for the AWS pieces of s3sync, for `s3sync local`, `s3sync demo` and the end-to-end tests.

- `servers`: real local servers (moto's standalone server; `rclone serve s3`), as context managers.
- `events`: the Lambda events AWS delivers (S3 notification, SNS-wrapped CloudWatch alarm, DynamoDB stream).
- `patterns`: Lambda event filtering (the EventBridge pattern subset) for event source mapping filters.
- `streams`: a DynamoDB stream reader that polls every shard, as an event source mapping does.
- `alarms`: a CloudWatch-like alarm evaluator (moto stores alarms but never evaluates them).

Importing this package imports nothing heavy; moto is imported only when a `MotoServer` starts.
"""
