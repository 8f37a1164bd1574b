rule train_codec:
    input:
        split=f"{RESULTS}/split",
        sources=MODEL_SOURCES,
        settings=lambda w: settings_file("train_codec", w.bps),
    output:
        f"{RESULTS}/models/{{bps}}bps.safetensors",
    log:
        f"{RESULTS}/logs/train_codec/{{bps}}bps.log",
    benchmark:
        benchmark_file("train_codec", "{bps}bps")
    params:
        config=CONFIG,
        work=lambda w, output: beside(output[0], "train", w.bps),
        metrics=lambda w, output: beside(output[0], "train_metrics", w.bps),
    threads: workflow.cores
    resources:
        gpu=training_uses_gpu(),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} train --config {params.config} --bitrate {wildcards.bps}"
        " --train-manifest {input.split}/train.csv --val-manifest {input.split}/val.csv"
        " --out {output} --work-dir {params.work}"
        " --metrics-dir {params.metrics} --restart-on-change -q"
