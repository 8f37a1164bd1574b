rule fetch_corpus:
    output:
        directory(f"resources/{NAME}/corpus"),
    log:
        f"{RESULTS}/logs/fetch_corpus.log",
    params:
        config=CONFIG,
        dataset=json.dumps({"dataset": config["dataset"], "vctk": config["data"]["vctk"],
                            "folder": config["data"]["folder"]}, sort_keys=True),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data fetch --config {params.config} --out {output} -q"


rule clean_corpus:
    input:
        f"resources/{NAME}/corpus",
    output:
        directory(f"{RESULTS}/clean"),
    log:
        f"{RESULTS}/logs/clean_corpus.log",
    params:
        config=CONFIG,
        clean=json.dumps(config["data"]["clean"], sort_keys=True),
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data clean --config {params.config} --input {input} --out {output} -q"


rule split_speakers:
    input:
        f"{RESULTS}/clean",
    output:
        directory(f"{RESULTS}/split"),
    log:
        f"{RESULTS}/logs/split_speakers.log",
    params:
        config=CONFIG,
        split=json.dumps(config["data"]["split"], sort_keys=True),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data split --config {params.config} --manifest {input}/manifest.csv --out {output}"
