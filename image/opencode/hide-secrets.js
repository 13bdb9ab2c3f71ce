// watcherd: credentials stay out of the commands the agent runs. OpenCode gives every
// command it starts (bash tool, shell, terminals) its own environment plus what the
// "shell.env" hook returns; variables named like a secret are emptied there. OpenCode
// itself still reads them. The agent runs as the same user, so a determined one can still
// read /proc/<pid>/environ of OpenCode: use credentials scoped to this use.
const SECRET = /KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|^OPENCODE_(CONFIG|AUTH)_CONTENT$/i

export const WatcherdHideSecrets = async () => ({
  "shell.env": async (_input, output) => {
    for (const name of Object.keys(process.env)) {
      if (SECRET.test(name)) output.env[name] = ""
    }
  },
})
