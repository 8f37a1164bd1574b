rule make_report:
    input:
        evals=[RUN.eval(run) for run in EVAL_RUNS],
        settings=settings_file("make_report"),
    output:
        table=report(f"{RUN.report}/table1.csv", caption="../report/table1.rst", category="Result"),
        markdown=f"{RUN.report}/table1.md",
        plot=report(f"{RUN.report}/rate_quality.png", caption="../report/plot.rst", category="Result"),
        svg=f"{RUN.report}/rate_quality.svg",
        metrics=f"{RUN.report}/metrics.json",
        curve=f"{RUN.report}/curve.csv",
    log:
        RUN.log("make_report"),
    params:
        config=CONFIG,
        evals=lambda w, input: os.path.dirname(input.evals[0]),
        out=lambda w, output: os.path.dirname(output.table),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} report --config {params.config} {params.evals} --out {params.out}"


rule make_listening_page:
    input:
        REPORT_FILES,
        [RUN.eval(run) for run in EVAL_RUNS],
        settings=settings_file("make_listening_page"),
    output:
        report(
            directory(RUN.listen),
            htmlindex="index.html",
            caption="../report/listen.rst",
            category="Listening",
        ),
    log:
        RUN.log("make_listening_page"),
    params:
        config=CONFIG,
        results=lambda w, output: os.path.dirname(output[0]),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} listen --config {params.config} --results {params.results} --out {output}"
