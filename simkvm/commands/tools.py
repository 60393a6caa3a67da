"""`simkvm schema` (the plan's JSON Schema, for editors) and `simkvm completion bash` (shell completion).

Both are derived, never written by hand: the schema from the plan's dataclasses
(simkvm.schema), the completion script from this CLI's own argparse parser, so
neither can fall behind a new key or flag.
"""
from __future__ import annotations

import argparse
import json
import shlex


def cmd_schema(args: argparse.Namespace) -> int:
    from ..schema import plan_schema

    print(json.dumps(plan_schema(), indent=2, ensure_ascii=False))
    return 0


def _walk(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]], dict[str, argparse.ArgumentParser]]:
    """(option strings, choices per option, sub-parsers by name) of one parser."""
    options: list[str] = []
    choices: dict[str, list[str]] = {}
    subs: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs.update(action.choices)
            continue
        options += [o for o in action.option_strings if o.startswith("--")]
        if action.option_strings and action.choices:
            for o in action.option_strings:
                choices[o] = [str(c) for c in action.choices]
    return options, choices, subs


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion function for ``parser``: sub-commands (two levels), their --options, an option's
    choices, and file names for everything else."""
    top_options, _, commands = _walk(parser)
    cases = []
    for name, sub in commands.items():
        options, choices, subsubs = _walk(sub)
        inner = []
        for subname, subsub in subsubs.items():
            o2, c2, _ = _walk(subsub)
            inner.append(f"        {shlex.quote(subname)}) opts={shlex.quote(' '.join(o2))}; "
                         + _choice_case(c2) + ";;")
        body = (f"      subs={shlex.quote(' '.join(subsubs))}; opts={shlex.quote(' '.join(options))}; "
                + _choice_case(choices))
        if inner:
            body += '\n      case "$sub" in\n' + "\n".join(inner) + "\n      esac"
        cases.append(f"    {shlex.quote(name)})\n{body};;")
    return f"""# bash completion for simkvm: eval "$(simkvm completion bash)" (or save it to
# /etc/bash_completion.d/simkvm). zsh: autoload -U bashcompinit && bashcompinit first.
_simkvm() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  local cmd="${{COMP_WORDS[1]}}" sub="${{COMP_WORDS[2]}}" subs="" opts="" choices=""
  COMPREPLY=()
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W {shlex.quote(' '.join(list(commands) + top_options))} -- "$cur")); return 0
  fi
  case "$cmd" in
{chr(10).join(cases)}
  esac
  if [[ -n $subs && $COMP_CWORD -eq 2 ]]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur")); return 0
  fi
  if [[ -n $choices ]]; then
    COMPREPLY=($(compgen -W "$choices" -- "$cur")); return 0
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur")); return 0
  fi
  COMPREPLY=($(compgen -f -- "$cur"))
}}
complete -o filenames -F _simkvm simkvm
"""


def _choice_case(choices: dict[str, list[str]]) -> str:
    """The choices of the option just typed (``--pattern <TAB>``)."""
    if not choices:
        return ""
    arms = " ".join(f"{shlex.quote(o)}) choices={shlex.quote(' '.join(c))};;" for o, c in choices.items())
    return f'case "$prev" in {arms} esac'


def cmd_completion(args: argparse.Namespace) -> int:
    from ..cli import build_parser

    print(bash_completion(build_parser()), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the plan file's JSON Schema (for editors)",
                       description="Print the JSON Schema of a plan file, e.g. for VS Code's YAML extension: "
                                   "simkvm schema > simkvm-plan.schema.json")
    p.set_defaults(func=cmd_schema)
    c = sub.add_parser("completion", help="print a shell completion script",
                       description='Print a completion script: eval "$(simkvm completion bash)"')
    c.add_argument("shell", choices=["bash"], help="the shell (zsh: load bashcompinit, then use bash's)")
    c.set_defaults(func=cmd_completion)
