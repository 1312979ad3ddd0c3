"""The small recipes: ``mkdir``, ``command`` and ``template`` (Jinja2)."""

import json
import os
from pathlib import Path

import jinja2
import jinja2.sandbox

from . import Recipe, RecipeError, as_bool, lines


class Mkdir(Recipe):
    """``paths`` (one per line, default: the part's location), ``mode`` (octal, default 0755)."""

    def install(self):
        mode = int(self.options.get("mode", "0755"), 8)
        made = []
        for path in lines(self.options.get("paths")) or [str(self.location)]:
            Path(path).mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
            made.append(path)
        return made

    update = install


class Command(Recipe):
    """``command`` (shell) run at install, ``update-command`` at update (default: none),
    in the part's location; ``stop-on-error`` (default true)."""

    def _run(self, option):
        command = self.options.get(option, "").strip()
        if not command:
            return []
        self.location.mkdir(parents=True, exist_ok=True)
        try:
            self.context.run(command, cwd=self.location, shell=True, what=f"[{self.name}] {option}")
        except RecipeError:
            if as_bool(self.options.get("stop-on-error"), True):
                raise
        return [str(self.location)]

    def install(self):
        if not self.options.get("command", "").strip():
            raise RecipeError(f"[{self.name}] needs option 'command'")
        return self._run("command")

    def update(self):
        return self._run("update-command")


class Template(Recipe):
    """Jinja2: ``url`` (or ``input``: a file) or ``inline`` text, rendered to ``output``.

    The template sees ``options`` (this part's options) and one variable per
    ``context`` line ``NAME VALUE`` (e.g. ``context = python /usr/bin/python3``);
    ``mode`` (octal) for the output. In an instance profile it also sees
    ``parameters`` (the request's parameters, a dict), ``slap_parameter`` (the
    ``[slap-parameter]`` section: the profile's defaults with the request's
    values over them) and ``shared_instances`` (a list of {id, title, state,
    parameters}).

    Parameters are data, never template source: templates render in Jinja2's
    sandbox, and an ``inline`` template whose text would carry a value the
    requester gave (``${slap-parameter:…}`` substituted into it) is refused;
    use ``{{ slap_parameter['…'] }}`` or ``{{ parameters['…'] }}`` instead.
    """

    def install(self):
        output = Path(self.require("output"))
        source = self.options.get("url") or self.options.get("input")
        if source:
            if "url" in self.given or "input" in self.given:
                raise RecipeError(f"[{self.name}] the template's location comes from the "
                                  "request's parameters; a template must come from the release")
            text = self.context.read_text(source.strip(), self.options.get("sha256"),
                                          self.options.get("md5sum"))
        elif "inline" in self.options:
            if "inline" in self.given:
                raise RecipeError(
                    f"[{self.name}] inline template text carries a value from the request "
                    "(a ${slap-parameter:…} or ${slap-configuration:…} substituted into it): "
                    "parameters are data, never template source; write "
                    "{{ slap_parameter['NAME'] }} in the template instead")
            text = self.options["inline"]
        else:
            raise RecipeError(f"[{self.name}] needs 'url', 'input' or 'inline'")
        variables = {"options": self.options, "parameters": self.context.instance_parameters(),
                     "slap_parameter": self.context.slap_parameter(),
                     "shared_instances": self.context.shared_instances()}
        for line in lines(self.options.get("context")):
            key, _, value = line.partition(" ")
            if key in variables:
                raise RecipeError(f"[{self.name}] context line {line!r}: {key!r} is a "
                                  "variable every template has; pick another name")
            variables[key] = value.strip()
        try:
            environment = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined,
                                                              keep_trailing_newline=True)
            environment.filters["fromjson"] = json.loads
            rendered = environment.from_string(text).render(variables)
        except (jinja2.TemplateError, ValueError) as exc:
            raise RecipeError(f"[{self.name}] template error: {exc}") from None
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(rendered, encoding="utf-8")
        if self.options.get("mode"):
            os.chmod(tmp, int(self.options["mode"], 8))
        os.replace(tmp, output)
        return [str(output)]

    update = install

