"""Worker sizes AWS accepts: Fargate's CPU/memory pairs, what an EC2 instance type can hold, and what a worker's part
buffers need. One set of tables for the template's Rules (ecs.yaml refuses an impossible size at stack creation and
update, in the console too) and for `s3sync deploy`, which checks the same before any stack changes (and adds the
one check a Rule cannot make: PartSizeMiB is a lambda.yaml parameter, WorkerThreads and TaskMemory are ecs.yaml's,
and Rules neither multiply nor read another stack).

Pure: no AWS calls, no runtime imports.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

#: Fargate task sizes, TaskCpu (CPU units) -> the TaskMemory values (MiB) it takes. From the ECS documentation
#: (RegisterTaskDefinition `memory`; https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
#: task-cpu-memory-error.html): "512 (0.5 GB), 1024 (1 GB), 2048 (2 GB) - Available cpu values: 256 (.25 vCPU)";
#: "1024 (1 GB), 2048 (2 GB), 3072 (3 GB), 4096 (4 GB) - Available cpu values: 512 (.5 vCPU)"; "2048 (2 GB), ...,
#: 8192 (8 GB) - Available cpu values: 1024 (1 vCPU)"; "Between 4096 (4 GB) and 16384 (16 GB) in increments of 1024
#: (1 GB) - Available cpu values: 2048 (2 vCPU)"; "Between 8192 (8 GB) and 30720 (30 GB) in increments of 1024
#: (1 GB) - Available cpu values: 4096 (4 vCPU)"; "Between 16 GB and 60 GB in 4 GB increments - Available cpu
#: values: 8192 (8 vCPU)"; "Between 32GB and 120 GB in 8 GB increments - Available cpu values: 16384 (16 vCPU)"
#: (the last two need Linux platform 1.4.0 or later, which LATEST is).
FARGATE_MEMORY: Mapping[int, tuple[int, ...]] = MappingProxyType(
    {
        256: (512, 1024, 2048),
        512: tuple(range(1024, 4096 + 1, 1024)),
        1024: tuple(range(2048, 8192 + 1, 1024)),
        2048: tuple(range(4096, 16384 + 1, 1024)),
        4096: tuple(range(8192, 30720 + 1, 1024)),
        8192: tuple(range(16384, 61440 + 1, 4096)),
        16384: tuple(range(32768, 122880 + 1, 8192)),
    }
)

#: TaskCpu's allowed values (CPU units; 1024 = 1 vCPU): the Fargate sizes, which EC2 tasks take too.
TASK_CPU_VALUES: tuple[int, ...] = tuple(sorted(FARGATE_MEMORY))
#: TaskMemory's allowed values (MiB): every memory size of a Fargate task. An EC2 task takes the same steps (1 GiB
#: up to 30 GiB, then 4 and 8 GiB), so that one list serves both launch types and the Rules can name what fits.
TASK_MEMORY_VALUES: tuple[int, ...] = tuple(sorted({m for sizes in FARGATE_MEMORY.values() for m in sizes}))

#: The instance types the EC2 launch type offers (InstanceType's AllowedValues): name -> (vCPUs, memory MiB), from
#: the EC2 instance type specifications (https://docs.aws.amazon.com/ec2/latest/instancetypes/co.html,
#: https://docs.aws.amazon.com/ec2/latest/instancetypes/gp.html). Compute-optimized and general-purpose types of
#: two generations; c5 and m5 are offered in nearly every region, China included; c6i and m6i in most (cfn-lint's
#: per-region instance type data). The work is network-bound: more vCPUs mainly buy more bandwidth.
INSTANCE_TYPES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        **{f"{family}.{size}": (vcpus, vcpus * 2048) for family in ("c5", "c6i")
           for size, vcpus in (("large", 2), ("xlarge", 4), ("2xlarge", 8), ("4xlarge", 16))},
        **{f"{family}.{size}": (vcpus, vcpus * 4096) for family in ("m5", "m6i")
           for size, vcpus in (("large", 2), ("xlarge", 4), ("2xlarge", 8), ("4xlarge", 16))},
    }
)  # fmt: skip

#: What an EC2 container instance offers tasks. CPU: 1024 units per vCPU. Memory: less than installed: "Because of
#: platform memory overhead and memory occupied by the system kernel, this number is different than the installed
#: memory amount ... an m4.large instance has 8 GiB of installed memory ... 7985 MiB" (ECS, "Reserving Amazon ECS
#: Linux container instance memory", https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
#: memory-management.html), and "We recommend reserving a 5% memory buffer for Amazon ECS container agent and other
#: critical system processes" (AWS Batch, the same agent: https://docs.aws.amazon.com/batch/latest/userguide/
#: ecs-reserved-memory.html). A task may take at most 95% of the installed memory; with TaskMemory in 1 GiB steps
#: that is at least one step below the installed size.
CPU_UNITS_PER_VCPU = 1024
EC2_MEMORY_SHARE = 0.95

#: A worker's memory beyond its part buffers: the Python process, boto3's clients and connection pools, threads
#: (60 MiB measured for the process with its clients; four times that, for the pools and TLS buffers under load).
WORKER_BASE_MIB = 256
#: Part buffers, one per copy thread (s3sync.transfer.copier), plus a quarter for allocator fragmentation and the
#: moment a thread allocates a last part of another size while its previous buffer is still referenced.
PART_BUFFER_FACTOR = 1.25


def ec2_memory_mib(instance_type: str) -> int:
    """The most memory (MiB) a task may ask of one `instance_type` container instance."""
    return int(INSTANCE_TYPES[instance_type][1] * EC2_MEMORY_SHARE)


def ec2_cpu_units(instance_type: str) -> int:
    return INSTANCE_TYPES[instance_type][0] * CPU_UNITS_PER_VCPU


def worker_memory_mib(worker_threads: int, part_size_mib: int) -> int:
    """The memory one worker task needs for `worker_threads` copy threads at `part_size_mib` parts."""
    return int(worker_threads * part_size_mib * PART_BUFFER_FACTOR) + WORKER_BASE_MIB


def problems(*, launch_type: str, task_cpu: int, task_memory: int, instance_type: str | None = None,
             worker_threads: int | None = None, part_size_mib: int | None = None) -> Iterator[str]:
    """What AWS (or the worker) would refuse in these sizes, one message per problem naming the parameters."""
    if task_cpu not in FARGATE_MEMORY:
        yield f"TaskCpu {task_cpu} is not one of {', '.join(map(str, TASK_CPU_VALUES))}"
        return
    if launch_type == "FARGATE":
        allowed = FARGATE_MEMORY[task_cpu]
        if task_memory not in allowed:
            yield (f"on FARGATE, TaskCpu {task_cpu} takes TaskMemory {_ranges(allowed)} MiB, not {task_memory} "
                   "(Fargate's CPU and memory combinations)")
    elif launch_type == "EC2" and instance_type is not None:
        if instance_type not in INSTANCE_TYPES:
            yield f"InstanceType {instance_type} is not one of {', '.join(INSTANCE_TYPES)}"
        else:
            vcpus, installed = INSTANCE_TYPES[instance_type]
            if task_cpu > ec2_cpu_units(instance_type):
                yield (f"TaskCpu {task_cpu} does not fit InstanceType {instance_type} ({vcpus} vCPUs = "
                       f"{ec2_cpu_units(instance_type)} CPU units)")
            if task_memory > ec2_memory_mib(instance_type):
                yield (f"TaskMemory {task_memory} MiB does not fit InstanceType {instance_type} ({installed} MiB "
                       f"installed, at most {ec2_memory_mib(instance_type)} MiB for tasks)")
    if worker_threads is not None and part_size_mib is not None:
        need = worker_memory_mib(worker_threads, part_size_mib)
        if need > task_memory:
            yield (f"WorkerThreads {worker_threads} x PartSizeMiB {part_size_mib} needs {need} MiB of TaskMemory "
                   f"(each copy thread holds one part, plus {WORKER_BASE_MIB} MiB for the process), more than "
                   f"TaskMemory {task_memory}: raise TaskMemory, or lower WorkerThreads or PartSizeMiB")


def _ranges(values: tuple[int, ...]) -> str:
    if len(values) <= 4:
        return ", ".join(map(str, values[:-1])) + f" or {values[-1]}"
    return f"{values[0]} to {values[-1]} in steps of {values[1] - values[0]}"


# --- CloudFormation Rules ------------------------------------------------------------------------------------------
def _contains(values: tuple[int, ...], parameter: str) -> dict[str, object]:
    return {"Fn::Contains": [[str(v) for v in values], {"Ref": parameter}]}


def _one_of(allowed: tuple[int, ...], every: tuple[int, ...], parameter: str) -> dict[str, object]:
    """`parameter` is one of `allowed` (a subset of its AllowedValues `every`), in the shorter of two spellings:
    Contains(allowed) or Not(Contains(every - allowed)). The template stays under CloudFormation's 51,200 bytes."""
    refused = tuple(v for v in every if v not in allowed)
    if len(refused) < len(allowed):
        return {"Fn::Not": [_contains(refused, parameter)]}
    return _contains(allowed, parameter)


def _when(launch_type: str, parameter: str, values: list[str]) -> dict[str, object]:
    test = ({"Fn::Equals": [{"Ref": parameter}, values[0]]} if len(values) == 1
            else {"Fn::Contains": [values, {"Ref": parameter}]})
    return {"Fn::And": [{"Fn::Equals": [{"Ref": "LaunchType"}, launch_type]}, test]}


def rules() -> dict[str, dict[str, object]]:
    """Rules for ecs.yaml (logical name -> rule): Fargate's CPU/memory pairs, and an EC2 task within its instance
    type (one rule per vCPU count and one per memory size, each naming the instance types it covers). A rule's
    assertions are checked when its RuleCondition holds; a failed one stops the create or update before any
    resource changes, with its AssertDescription."""
    out: dict[str, dict[str, object]] = {}
    for cpu, memory in FARGATE_MEMORY.items():
        out[f"FargateTaskSize{cpu}"] = {
            "RuleCondition": _when("FARGATE", "TaskCpu", [str(cpu)]),
            "Assertions": [{"Assert": _contains(memory, "TaskMemory"),
                            "AssertDescription": f"On FARGATE, TaskCpu {cpu} takes TaskMemory "
                                                 f"{_ranges(memory)} (MiB)"}],
        }  # fmt: skip
    by_cpu: dict[int, list[str]] = {}
    by_memory: dict[int, list[str]] = {}
    for name, (vcpus, installed) in INSTANCE_TYPES.items():
        by_cpu.setdefault(vcpus, []).append(name)
        by_memory.setdefault(installed, []).append(name)
    for vcpus, names in sorted(by_cpu.items()):
        cpus = tuple(c for c in TASK_CPU_VALUES if c <= ec2_cpu_units(names[0]))
        if cpus == TASK_CPU_VALUES:
            continue
        out[f"Ec2TaskCpuFits{vcpus}Vcpus"] = {
            "RuleCondition": _when("EC2", "InstanceType", names),
            "Assertions": [{"Assert": _one_of(cpus, TASK_CPU_VALUES, "TaskCpu"),
                            "AssertDescription": f"On InstanceType {', '.join(names)} ({vcpus} vCPUs) TaskCpu is "
                                                 f"at most {cpus[-1]}"}],
        }  # fmt: skip
    for installed, names in sorted(by_memory.items()):
        memory = tuple(m for m in TASK_MEMORY_VALUES if m <= ec2_memory_mib(names[0]))
        out[f"Ec2TaskMemoryFits{installed}"] = {
            "RuleCondition": _when("EC2", "InstanceType", names),
            "Assertions": [{"Assert": _one_of(memory, TASK_MEMORY_VALUES, "TaskMemory"),
                            "AssertDescription": f"On InstanceType {', '.join(names)} ({installed} MiB, "
                                                 f"{ec2_memory_mib(names[0])} MiB for tasks) TaskMemory is at "
                                                 f"most {memory[-1]}"}],
        }  # fmt: skip
    return out
