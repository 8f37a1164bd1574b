rule fetch_corpus:
    input:
        settings=settings_file("fetch_corpus"),
    output:
        directory(f"resources/{NAME}/corpus"),
    log:
        f"{RESULTS}/logs/fetch_corpus.log",
    params:
        config=CONFIG,
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data fetch --config {params.config} --out {output} -q"


rule clean_corpus:
    input:
        corpus=f"resources/{NAME}/corpus",
        settings=settings_file("clean_corpus"),
    output:
        directory(f"{RESULTS}/clean"),
    log:
        f"{RESULTS}/logs/clean_corpus.log",
    params:
        config=CONFIG,
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data clean --config {params.config} --input {input.corpus} --out {output} -q"


rule split_speakers:
    input:
        clean=f"{RESULTS}/clean",
        settings=settings_file("split_speakers"),
    output:
        directory(f"{RESULTS}/split"),
    log:
        f"{RESULTS}/logs/split_speakers.log",
    params:
        config=CONFIG,
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data split --config {params.config} --manifest {input.clean}/manifest.csv --out {output}"
