rule eval_neural:
    input:
        model=f"{RESULTS}/models/{{bps}}bps.safetensors",
        split=f"{RESULTS}/split",
    output:
        directory(f"{RESULTS}/eval/neural-{{bps}}bps"),
    log:
        f"{RESULTS}/logs/eval_neural/{{bps}}bps.log",
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
        neural=f"{RESULTS}/eval/neural-{{bps}}bps",
        split=f"{RESULTS}/split",
    output:
        directory(f"{RESULTS}/eval/opus-match-{{bps}}bps"),
    log:
        f"{RESULTS}/logs/eval_opus_matched/{{bps}}bps.log",
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
        f"{RESULTS}/split",
    output:
        directory(f"{RESULTS}/eval/opus-{{grid}}bps"),
    log:
        f"{RESULTS}/logs/eval_opus_grid/{{grid}}bps.log",
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
        f"{RESULTS}/split",
    output:
        directory(f"{RESULTS}/eval/codec2-{{mode}}bps"),
    log:
        f"{RESULTS}/logs/eval_codec2_grid/{{mode}}bps.log",
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
        model="src/speechcodec/pretrained/{model}.safetensors",
        split=f"{RESULTS}/split",
    output:
        directory(f"{RESULTS}/eval/shipped-{{model}}"),
    log:
        f"{RESULTS}/logs/eval_shipped/{{model}}.log",
    benchmark:
        benchmark_file("eval_shipped", "{model}")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --model {input.model}"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"


rule eval_opus_matched_shipped:
    input:
        neural=f"{RESULTS}/eval/shipped-{{model}}",
        split=f"{RESULTS}/split",
    output:
        directory(f"{RESULTS}/eval/opus-match-shipped-{{model}}"),
    log:
        f"{RESULTS}/logs/eval_opus_matched_shipped/{{model}}.log",
    benchmark:
        benchmark_file("eval_opus_matched_shipped", "{model}")
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} eval --opus-match {input.neural}/summary.json"
        " --test-manifest {input.split}/test.csv --out {output} --keep-audio -q"
