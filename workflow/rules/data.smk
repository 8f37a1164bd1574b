rule fetch_corpus:
    input:
        settings=settings_file("fetch_corpus"),
    output:
        directory(RUN.corpus),
    log:
        RUN.log("fetch_corpus"),
    params:
        config=CONFIG,
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data fetch --config {params.config} --out {output} -q"


rule clean_corpus:
    input:
        corpus=RUN.corpus,
        settings=settings_file("clean_corpus"),
    output:
        directory(RUN.clean),
    log:
        RUN.log("clean_corpus"),
    params:
        config=CONFIG,
    threads: workflow.cores
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data clean --config {params.config} --input {input.corpus} --out {output} -q"


rule split_speakers:
    input:
        clean=RUN.clean,
        settings=settings_file("split_speakers"),
    output:
        directory(RUN.split),
    log:
        RUN.log("split_speakers"),
    params:
        config=CONFIG,
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} data split --config {params.config} --manifest {input.clean}/manifest.csv --out {output}"
