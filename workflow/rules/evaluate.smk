rule eval_neural:
    input:
        model=RUN.model("{bps}"),
        split=RUN.split,
    output:
        directory(RUN.eval(neural_run("{bps}"))),
    log:
        RUN.log("eval_neural", "{bps}bps"),
    benchmark:
        benchmark_file("eval_neural", "{bps}bps")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --model {input.model} --target-bitrate {wildcards.bps}"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"


rule eval_opus_matched:
    input:
        neural=RUN.eval(neural_run("{bps}")),
        split=RUN.split,
    output:
        directory(RUN.eval(opus_matched_run(neural_run("{bps}")))),
    log:
        RUN.log("eval_opus_matched", "{bps}bps"),
    benchmark:
        benchmark_file("eval_opus_matched", "{bps}bps")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --opus-match {input.neural}/summary.json"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"


rule eval_opus_grid:
    input:
        RUN.split,
    output:
        directory(RUN.eval(opus_run("{grid}"))),
    log:
        RUN.log("eval_opus_grid", "{grid}bps"),
    benchmark:
        benchmark_file("eval_opus_grid", "{grid}bps")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --opus {wildcards.grid}"
        " --test-manifest {input}/test.csv --out {output} -q"


rule eval_codec2_grid:
    input:
        RUN.split,
    output:
        directory(RUN.eval(codec2_run("{mode}"))),
    log:
        RUN.log("eval_codec2_grid", "{mode}bps"),
    benchmark:
        benchmark_file("eval_codec2_grid", "{mode}bps")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --codec2 {wildcards.mode}"
        " --test-manifest {input}/test.csv --out {output} --keep-audio -q"


rule eval_shipped:
    input:
        model=shipped_model_file,
        split=RUN.split,
    output:
        directory(RUN.eval(shipped_run("{model}"))),
    log:
        RUN.log("eval_shipped", "{model}"),
    benchmark:
        benchmark_file("eval_shipped", "{model}")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        # by name: pc-6k is the installed pc at 6 kbps
        "speechcodec --log {log} eval --model {wildcards.model}"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"


rule eval_opus_matched_shipped:
    input:
        neural=RUN.eval(shipped_run("{model}")),
        split=RUN.split,
    output:
        directory(RUN.eval(opus_matched_run(shipped_run("{model}")))),
    log:
        RUN.log("eval_opus_matched_shipped", "{model}"),
    benchmark:
        benchmark_file("eval_opus_matched_shipped", "{model}")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --opus-match {input.neural}/summary.json"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"


# The textbook transform coder (speechcodec.baselines.TransformCodec): what a coder without a
# network does at each model's real rate, and over the Opus grid for the plot.
rule eval_transform_matched:
    input:
        neural=RUN.eval(neural_run("{bps}")),
        split=RUN.split,
    output:
        directory(RUN.eval(transform_matched_run(neural_run("{bps}")))),
    log:
        RUN.log("eval_transform_matched", "{bps}bps"),
    benchmark:
        benchmark_file("eval_transform_matched", "{bps}bps")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --transform-match {input.neural}/summary.json"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"


rule eval_transform_grid:
    input:
        RUN.split,
    output:
        directory(RUN.eval(transform_run("{grid}"))),
    log:
        RUN.log("eval_transform_grid", "{grid}bps"),
    benchmark:
        benchmark_file("eval_transform_grid", "{grid}bps")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --transform {wildcards.grid}"
        " --test-manifest {input}/test.csv --out {output} -q"


rule eval_transform_matched_shipped:
    input:
        neural=RUN.eval(shipped_run("{model}")),
        split=RUN.split,
    output:
        directory(RUN.eval(transform_matched_run(shipped_run("{model}")))),
    log:
        RUN.log("eval_transform_matched_shipped", "{model}"),
    benchmark:
        benchmark_file("eval_transform_matched_shipped", "{model}")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --transform-match {input.neural}/summary.json"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"
