# `snakemake ship --configfile config/ship.yaml`: the shipped models, trained (or continued) on
# the config's `ship.data`, their postfilter strengths chosen on its validation files, measured on
# `ship.test_speech` (speakers never trained on) for quality and on one thread for speed, each
# with its model card; Table 1, the plot and the results table of docs/results.md
# come out of the same run. Not part of `all`: hours of training on a CPU.
# `scripts/ship.sh` runs it and installs the result (src/speechcodec/pretrained, docs/).

rule ship:
    input:
        [RUN.shipped_card(m) for m in [*SHIP_MODELS, *SHIP_PERCEPTUAL]],
        f"{RUN.ship}/report/table1.md",
        f"{RUN.ship}/results.md",


rule ship_train:
    input:
        sources=MODEL_SOURCES,
        settings=RUN.settings("ship_train@{model}"),
    output:
        f"{RUN.ship}/{{model}}.trained.safetensors",
    log:
        RUN.log("ship_train", "{model}"),
    params:
        config=CONFIG,
        bps=lambda w: SHIP_MODELS[w.model],
        data=lambda w: ship_setting("data"),
        val_files=lambda w: ship_setting("val_files"),
        flags=ship_train_flags,
        work=lambda w: f"{RUN.ship}/{w.model}.work",
    threads: workflow.cores
    resources:
        gpu=training_uses_gpu(),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} train --config {params.config} --bitrate {params.bps}"
        " --data {params.data} --val-files {params.val_files} --name {wildcards.model}"
        " --out {output} --work-dir {params.work} {params.flags} --restart-on-change -q"
        " --description 'trained by snakemake ship on {params.data}'"


rule ship_postfilter:
    input:
        f"{RUN.ship}/{{model}}.trained.safetensors",
    output:
        RUN.shipped_model("{model}"),
    wildcard_constraints:
        model=one_of(SHIP_MODELS),
    log:
        RUN.log("ship_postfilter", "{model}"),
    params:
        data=lambda w: ship_setting("data"),
        val_files=lambda w: ship_setting("val_files"),
        choosing=lambda w: f"{RUN.ship}/{w.model}.choosing.safetensors",
    conda:
        "../envs/speechcodec.yaml"
    shell:
        # the postfilter's strengths, chosen on the training speech's validation files, stored in
        # the model file (weights, tables and fingerprint unchanged)
        "cp {input} {params.choosing} && python scripts/choose_postfilter.py --model {params.choosing} --write"
        " --speech {params.data} --val-files {params.val_files} > {log} 2>&1 && mv {params.choosing} {output}"


rule ship_perceptual:
    # the perceptual family: the textbook coder's stream with a frame-causal enhancer at its
    # decoder, one model for every rate; trained on `ship.data` less every tenth speaker (the
    # speakers choices are made on), resumable from its work folder
    input:
        sources=sorted(str(p) for p in Path("src/speechcodec/perceptual").glob("*.py")),
    output:
        RUN.shipped_model("{model}"),
    wildcard_constraints:
        model=one_of(SHIP_PERCEPTUAL),
    log:
        RUN.log("ship_perceptual", "{model}"),
    params:
        data=lambda w: ship_setting("data"),
        flags=perceptual_train_flags,
    threads: 1
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "python -m speechcodec.perceptual.train --data {params.data} --hold-out --name {wildcards.model}"
        " {params.flags} --out {output} > {log} 2>&1"


rule ship_quality:
    input:
        SHIP_FILES,
    output:
        csv=f"{RUN.ship}/quality.csv",
        table=f"{RUN.ship}/report/table1.md",
        plot=f"{RUN.ship}/report/rate_quality.png",
    log:
        RUN.log("ship_quality"),
    params:
        speech=lambda w: ship_setting("test_speech"),
        eval=f"{RUN.ship}/eval",
        report=lambda w, output: os.path.dirname(output.table),
        opus=" ".join(str(b) for b in config["eval"]["opus_grid_bps"]),
        codec2=" ".join(str(b) for b in config["eval"]["codec2_modes_bps"]),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "python benchmarks/quality.py {params.speech} --model {input} --csv {output.csv}"
        " --out {params.eval} --report {params.report} --opus-grid {params.opus}"
        " --codec2-modes {params.codec2} > {log} 2>&1"


rule ship_speed:
    input:
        models=SHIP_FILES,
        # not beside the quality run: speed is timed on a machine doing nothing else
        after=f"{RUN.ship}/quality.csv",
    output:
        f"{RUN.ship}/speed.csv",
    log:
        RUN.log("ship_speed"),
    params:
        speech=lambda w: ship_setting("test_speech"),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "python benchmarks/speed.py {params.speech} --model {input.models} --csv {output} > {log} 2>&1"


rule ship_card:
    input:
        model=RUN.shipped_model("{model}"),
        quality=f"{RUN.ship}/quality.csv",
        speed=f"{RUN.ship}/speed.csv",
    output:
        RUN.shipped_card("{model}"),
    log:
        RUN.log("ship_card", "{model}"),
    params:
        config=CONFIG,
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "python scripts/model_card.py {input.model} --quality {input.quality} --speed {input.speed}"
        " --config {params.config} > {log} 2>&1"


rule ship_results_table:
    input:
        quality=f"{RUN.ship}/quality.csv",
        models=SHIP_FILES,
    output:
        f"{RUN.ship}/results.md",
    log:
        RUN.log("ship_results_table"),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "python scripts/model_card.py --results-table --quality {input.quality} {input.models} > {output} 2> {log}"
