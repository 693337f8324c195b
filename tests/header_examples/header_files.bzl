"""header_files: the public headers of cc_library targets, as data files.

The checker reads headers of other packages. Their source files are not
visible from here (those packages default to private visibility and export no
files), but their cc_library targets are; this rule takes the libraries and
returns each one's own public headers (not those of its deps).
"""

def _header_files_impl(ctx):
    headers = []
    for lib in ctx.attr.libs:
        headers.extend(lib[CcInfo].compilation_context.direct_public_headers)
    return [DefaultInfo(
        files = depset(headers),
        runfiles = ctx.runfiles(files = headers),
    )]

header_files = rule(
    implementation = _header_files_impl,
    attrs = {
        "libs": attr.label_list(providers = [CcInfo]),
    },
    doc = "The public headers of `libs`, as files and runfiles.",
)
