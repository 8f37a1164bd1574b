rule make_report:
    input:
        evals=expand(f"{RESULTS}/eval/{{run}}", run=EVAL_RUNS),
        settings=settings_file("make_report"),
    output:
        table=report(f"{RESULTS}/report/table1.csv", caption="../report/table1.rst", category="Result"),
        markdown=f"{RESULTS}/report/table1.md",
        plot=report(f"{RESULTS}/report/rate_quality.png", caption="../report/plot.rst", category="Result"),
        svg=f"{RESULTS}/report/rate_quality.svg",
        metrics=f"{RESULTS}/report/metrics.json",
        curve=f"{RESULTS}/report/curve.csv",
    log:
        f"{RESULTS}/logs/make_report.log",
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
        expand(f"{RESULTS}/eval/{{run}}", run=EVAL_RUNS),
        settings=settings_file("make_listening_page"),
    output:
        report(
            directory(f"{RESULTS}/listen"),
            htmlindex="index.html",
            caption="../report/listen.rst",
            category="Listening",
        ),
    log:
        f"{RESULTS}/logs/make_listening_page.log",
    params:
        config=CONFIG,
        results=lambda w, output: os.path.dirname(output[0]),
    conda:
        "../envs/speechcodec.yaml"
    shell:
        "speechcodec --log {log} listen --config {params.config} --results {params.results} --out {output}"
