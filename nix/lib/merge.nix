# Merge settings `b` over `a`, one level of tables deep: enough for the
# config files the NixOS modules render (`settings.limits.x = …` keeps the
# other `limits` keys). Builtins only, like the rest of nix/lib.
a: b:
a
// builtins.mapAttrs (
  n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then a.${n} // v else v
) b
