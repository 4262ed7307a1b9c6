"""s3sync: event-driven S3 transfer from an AWS global region to an AWS China region.

`s3sync.stacks` builds the two CloudFormation templates (pure, never calls AWS);
`s3sync.transfer` is the runtime engine that the Lambda functions and ECS workers run;
`s3sync.local` runs the whole system on one machine.
"""

__version__ = "0.1.0"
