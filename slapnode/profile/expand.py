"""Expanding a profile: macros, substitutions, and the ordered list of parts.

Owns turning a RawProfile into fully expanded sections: ``<=`` macros applied
in the new section's context, ``${section:option}`` resolved (with cycle
detection and file:line in every error), ``$${...}`` kept literal, and the
parts to install in order (``[buildout] parts``, each preceded by the parts
its options refer to). Every part is expanded before anything is built, so a
profile with an error builds nothing.

Expansion is pure unless asked otherwise (``effects=True``, only while a build
or a deployment runs, as the software or partition user): an option a recipe
can only compute by acting (the password recipe's ``passwd`` makes and keeps
a file) expands to a stable placeholder in a pure expansion, so that digests
and plans never touch the disk. Options whose value comes, directly or through
substitutions, from what the agent gives (the requester's parameters, the
instance title, shared instances) are *given*: ``given_options`` names them,
so that a template never takes one as its source.
"""

import hashlib
import json

from .parser import ESCAPED, SUBST_RE, ProfileError, Value, resolve


class Profile:
    def __init__(self, raw, builtins=None, computed=None, overrides=None, effects=False,
                 trusted=()):
        """``builtins``: {section: {option: text}} the engine provides (e.g. the
        buildout directories), used where the profile does not set them.
        ``overrides``: {section: {option: text}} that win over the profile (the
        agent's [slap-configuration] and the request's [slap-parameter]); they
        are literal text, never substituted.
        ``computed(section, recipe, option, get) -> str | None``: options a
        recipe derives from the others (asked only for options not written).
        ``effects``: computed options may act (a real build); else they are pure.
        ``trusted``: (section, option) pairs of ``overrides`` that no requester can
        influence (the node's own values: addresses, paths); the others are given."""
        self.raw = raw
        self.builtins = builtins or {}
        self.overrides = overrides or {}
        self.computed = computed
        self.effects = effects
        self.trusted = frozenset(tuple(t) for t in trusted)
        self._cache = {}
        self._macro_cache = {}
        self._given = set()         # (section, option) whose value carries given text
        self._frames = []           # one per get() in progress: did it read given text?
        self.references = {}        # section -> sections its values refer to

    def pure(self):
        """The same profile, expanded without effects (for its digest)."""
        return Profile(self.raw, self.builtins, self.computed, self.overrides, effects=False,
                       trusted=self.trusted)

    # -- raw options, macros applied --------------------------------------------------
    def _raw_section(self, name, stack=()):
        if name in self._macro_cache:
            return self._macro_cache[name]
        if name not in self.raw.sections and name not in self.builtins and \
                name not in self.overrides:
            return None
        options = {k: Value(v, "(built in)") for k, v in self.builtins.get(name, {}).items()}
        own = dict(self.raw.sections.get(name, {}))
        macro = own.pop("<", None)
        if macro is not None:
            for macro_name in macro.text.split():
                if macro_name in stack or macro_name == name:
                    raise ProfileError(f"{macro.where}: macro loop: "
                                       f"{' -> '.join(stack + (name, macro_name))}")
                inherited = self._raw_section(macro_name, stack + (name,))
                if inherited is None:
                    raise ProfileError(f"{macro.where}: [{name}] <= {macro_name}: "
                                       f"no section [{macro_name}]")
                options.update(inherited)
        for key, value in own.items():
            if value.pending:       # += / -= on the macro's value (or on nothing: '=')
                below = options.get(key)
                operations = value.operations()
                if below is None and operations[0][0] == "+=":
                    operations = [("=", operations[0][1])] + operations[1:]
                value = Value(resolve(below.text if below is not None else "", operations),
                              value.where)
            options[key] = value
        for key, text in self.overrides.get(name, {}).items():
            options[key] = Value(str(text).replace("${", "$${"), f"(given: [{name}] {key})",
                                 given=(name, key) not in self.trusted)
        self._macro_cache[name] = options
        return options

    def has_section(self, name):
        return self._raw_section(name) is not None

    def recipe_of(self, name):
        options = self._raw_section(name) or {}
        recipe = options.get("recipe")
        return recipe.text.strip() if recipe is not None else None

    # -- expansion --------------------------------------------------------------------
    def get(self, section, option, where="", stack=()):
        key = (section, option)
        if key in self._cache:
            self._mark(key in self._given)
            return self._cache[key]
        if key in stack:
            chain = " -> ".join(f"${{{s}:{o}}}" for s, o in stack + (key,))
            raise ProfileError(f"{where or 'profile'}: substitution cycle: {chain}")
        options = self._raw_section(section)
        if options is None:
            raise ProfileError(f"{where or 'profile'}: ${{{section}:{option}}}: "
                               f"no section [{section}]")
        frame = [False]
        self._frames.append(frame)
        try:
            value = options.get(option)
            if value is None:
                text = self._computed(section, option, where, stack + (key,))
                if text is None:
                    raise ProfileError(f"{where or 'profile'}: ${{{section}:{option}}}: "
                                       f"section [{section}] has no option {option!r}")
                value = Value(text, where or "(computed)")
            frame[0] = frame[0] or value.given
            result = self._substitute(section, value, stack + (key,))
        finally:
            self._frames.pop()
        self._cache[key] = result
        if frame[0]:
            self._given.add(key)
        self._mark(frame[0])
        return result

    def _mark(self, given):
        """Tell the get() in progress (if any) that it read a given value."""
        if given and self._frames:
            self._frames[-1][0] = True

    def given_options(self, section):
        """Options of ``section`` whose value carries text the agent gave (expand first)."""
        return {option for s, option in self._given if s == section}

    def _computed(self, section, option, where, stack):
        if option == "_buildout_section_name_":
            return section
        recipe = self.recipe_of(section)
        if option == "location" and recipe:
            return f"{self.get('buildout', 'parts-directory', where, stack)}/{section}"
        if self.computed is None or not recipe:
            return None
        return self.computed(section, recipe, option,
                             lambda name: self.get(section, name, where, stack), self.effects)

    def _substitute(self, section, value, stack):
        text = value.text.replace("$${", ESCAPED)

        def replace(match):
            target = match.group(1) or section
            if target != section:
                self.references.setdefault(section, set()).add(target)
            return self.get(target, match.group(2), value.where, stack)

        # Substituted text is final: it is not scanned again.
        return SUBST_RE.sub(replace, text)

    def section(self, name):
        """Every option of section ``name``, expanded; literal ``${`` restored."""
        options = self._raw_section(name)
        if options is None:
            raise ProfileError(f"profile: no section [{name}]")
        return {key: unescape(self.get(name, key)) for key in options if key != "<"}

    # -- parts ------------------------------------------------------------------------
    def parts(self):
        """[(name, options)] in install order. Disabled parts (empty recipe) are left out."""
        buildout = self._raw_section("buildout") or {}
        listed = buildout.get("parts")
        names = self.get("buildout", "parts").split() if listed is not None else []
        ordered, seen = [], set()

        def visit(name, trail, where):
            if name in seen:
                return
            if name in trail:
                raise ProfileError(f"{where}: parts depend on each other in a loop: "
                                   f"{' -> '.join(trail + (name,))}")
            if not self.has_section(name):
                raise ProfileError(f"{where}: part {name!r} has no section [{name}]")
            options = self.section(name)       # expands, and records references
            for ref in sorted(self.references.get(name, ())):
                if self.recipe_of(ref):
                    visit(ref, trail + (name,), where)
            seen.add(name)
            if options.get("recipe", "").strip():
                ordered.append((name, options))

        where = listed.where if listed is not None else "profile"
        for name in names:
            visit(name, (), where)
        return ordered

    def digest(self):
        """A hash of everything that will be built: the parts and their expanded options,
        and what the agent gave (a recipe may read any of it, e.g. the shared instances)."""
        profile = self.pure() if self.effects else self
        blob = json.dumps([profile.parts(), self.overrides], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def unescape(text):
    return text.replace(ESCAPED, "${")
