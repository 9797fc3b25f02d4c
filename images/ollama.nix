# ollama: the LLM server on 11434, models in the /root/.ollama volume. It
# runs as root because the volume's path is fixed to root's home by the
# cluster's manifests.
{
  pkgs,
  berthLib,
  common,
  ...
}:
berthLib.buildImage {
  name = "ollama";
  contents = [ pkgs.ollama ];
  config = {
    Entrypoint = [ "${pkgs.ollama}/bin/ollama" ];
    Cmd = [ "serve" ];
    Env = common.env ++ [
      "OLLAMA_HOST=0.0.0.0:11434"
      "HOME=/root"
    ];
    ExposedPorts."11434/tcp" = { };
    Volumes."/root/.ollama" = { };
    WorkingDir = "/root";
    StopSignal = "SIGTERM";
  };
  extraFiles = common.files ++ [
    {
      type = "directory";
      path = "/root/.ollama";
      mode = "0700";
    }
  ];
  annotations = common.annotations "ollama" pkgs.ollama;
}
