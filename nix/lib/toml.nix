# A TOML writer in builtins only, for the config files of `berth serve`,
# `berth mirror` and `berth bot`: tables of strings, integers, booleans,
# lists of those, nested tables (written as [a.b] sections), lists of
# tables (written as [[a.b]] sections, e.g. [[auth.robots]]) and tables
# inside those (written inline, { k = v }). nixpkgs'
# `formats.toml` would need a build step; this evaluates anywhere, so the
# tests can render exactly what the NixOS modules render. Null values are
# left out (the binary's default applies).
let
  escape =
    s:
    builtins.replaceStrings
      [ "\\" "\"" "\n" "\r" "\t" ]
      [ "\\\\" "\\\"" "\\n" "\\r" "\\t" ]
      s;
  key = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else "\"${escape k}\"";
  value =
    v:
    if builtins.isString v || builtins.isPath v then
      "\"${escape (toString v)}\""
    else if builtins.isBool v then
      (if v then "true" else "false")
    else if builtins.isInt v then
      toString v
    else if builtins.isFloat v then
      toString v
    else if builtins.isList v then
      "[" + builtins.concatStringsSep ", " (map value v) + "]"
    else if isTable v then
      "{ "
      + builtins.concatStringsSep ", " (
        map (n: "${key n} = ${value v.${n}}") (
          builtins.filter (n: v.${n} != null) (builtins.attrNames v)
        )
      )
      + " }"
    else
      throw "toTOML: cannot write a ${builtins.typeOf v} as a TOML value";
  isTable = v: builtins.isAttrs v && !(v ? outPath);
  isTableList = v: builtins.isList v && v != [ ] && builtins.all isTable v;
  fields =
    attrs:
    builtins.concatStringsSep "" (
      map (n: "${key n} = ${value attrs.${n}}\n") (
        builtins.filter (n: attrs.${n} != null) (builtins.attrNames attrs)
      )
    );
  section =
    path: attrs:
    let
      names = builtins.filter (n: attrs.${n} != null) (builtins.attrNames attrs);
      scalars = builtins.filter (n: !isTable attrs.${n} && !isTableList attrs.${n}) names;
      tables = builtins.filter (n: isTable attrs.${n}) names;
      tableLists = builtins.filter (n: isTableList attrs.${n}) names;
      dotted = n: builtins.concatStringsSep "." (map key (path ++ [ n ]));
      header = if path == [ ] then "" else "[${builtins.concatStringsSep "." (map key path)}]\n";
      body = builtins.concatStringsSep "" (map (n: "${key n} = ${value attrs.${n}}\n") scalars);
    in
    (if path != [ ] && scalars == [ ] then "" else header + body)
    + builtins.concatStringsSep "" (
      map (
        n: builtins.concatStringsSep "" (map (e: "\n[[${dotted n}]]\n" + fields e) attrs.${n})
      ) tableLists
    )
    + builtins.concatStringsSep "" (map (n: "\n" + section (path ++ [ n ]) attrs.${n}) tables);
in
attrs: section [ ] attrs
