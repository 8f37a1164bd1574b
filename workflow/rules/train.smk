rule train_codec:
    input:
        split=RUN.split,
        sources=MODEL_SOURCES,
        settings=lambda w: settings_file("train_codec", w.bps),
    output:
        RUN.model("{bps}"),
    log:
        RUN.log("train_codec", "{bps}bps"),
    benchmark:
        benchmark_file("train_codec", "{bps}bps")
    params:
        config=CONFIG,
        work=lambda w: RUN.work(w.bps),
        metrics=lambda w: RUN.train_metrics(w.bps),
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
