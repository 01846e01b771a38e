"""A small builder over openai-harmony conversations.

>>> conv = Conversation.new("Answer in French.", reasoning_effort="low", date="2025-08-05")
>>> conv = conv.user("What is 2 + 2?")
>>> tokens = conv.render()            # list[int], ends with <|start|>assistant
>>> encoding().decode(tokens[-2:])
'<|start|>assistant'

A ``Conversation`` is a list of openai_harmony ``Message`` objects (``conv.messages``) plus the Python
callables behind its function tools (``conv.functions``). Builder methods return ``self`` so they
chain; ``copy()`` gives an independent one. Rendering is openai-harmony's own, so it is identical by
construction; ``channels`` and ``recipients`` read back what the system and developer messages declare.
"""

from __future__ import annotations

import copy as _copy
import json
from typing import Any, Callable, Iterable, Sequence

from openai_harmony import (
    Author,
    ChannelConfig,
    Conversation as HarmonyConversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
)

from .encoding import encoding
from .functions import describe_function

DEFAULT_CHANNELS = ("analysis", "commentary", "final")
DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
BUILTIN_TOOLS = ("browser", "python")


def reasoning_effort(value: str | ReasoningEffort) -> ReasoningEffort:
    """'low' / 'medium' / 'high' (any case) or a ReasoningEffort -> ReasoningEffort."""
    if isinstance(value, ReasoningEffort):
        return value
    try:
        return ReasoningEffort(str(value).strip().capitalize())
    except ValueError:
        raise ValueError(f"reasoning effort must be low, medium or high, not {value!r}") from None


def builtin_config(name: str) -> ToolNamespaceConfig:
    """openai-harmony's own description of the built-in ``browser`` or ``python`` tool."""
    if name == "browser":
        return ToolNamespaceConfig.browser()
    if name == "python":
        return ToolNamespaceConfig.python()
    raise ValueError(f"unknown built-in tool {name!r}; expected one of {BUILTIN_TOOLS}")


class Conversation:
    """Harmony messages plus the callables of declared function tools."""

    def __init__(self, messages: Iterable[Message] = (), functions: dict[str, Callable] | None = None):
        self.messages: list[Message] = list(messages)
        self.functions: dict[str, Callable] = dict(functions or {})

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        instructions: str | None = None,
        *,
        reasoning_effort: str | ReasoningEffort = "medium",
        date: str | None = None,
        knowledge_cutoff: str | None = "2024-06",
        model_identity: str | None = DEFAULT_IDENTITY,
        browser: bool = False,
        python: bool = False,
        functions: Sequence[Callable | ToolDescription] = (),
        channels: Sequence[str] = DEFAULT_CHANNELS,
    ) -> "Conversation":
        """A system message (and a developer message when there are instructions or functions)."""
        conv = cls().system(
            reasoning_effort=reasoning_effort, date=date, knowledge_cutoff=knowledge_cutoff,
            model_identity=model_identity, browser=browser, python=python, channels=channels,
        )
        if instructions is not None or functions:
            conv.developer(instructions, functions=functions)
        return conv

    def system(
        self,
        *,
        reasoning_effort: str | ReasoningEffort = "medium",
        date: str | None = None,
        knowledge_cutoff: str | None = "2024-06",
        model_identity: str | None = DEFAULT_IDENTITY,
        browser: bool = False,
        python: bool = False,
        channels: Sequence[str] = DEFAULT_CHANNELS,
    ) -> "Conversation":
        """Set the system message (replacing an existing one, which must come first)."""
        content = SystemContent(
            model_identity=model_identity,
            reasoning_effort=globals()["reasoning_effort"](reasoning_effort),
            conversation_start_date=date,
            knowledge_cutoff=knowledge_cutoff,
            channel_config=ChannelConfig.require_channels(list(channels)) if channels else None,
        )
        for name, wanted in (("browser", browser), ("python", python)):
            if wanted:
                content.with_tools(builtin_config(name))
        message = Message.from_role_and_content(Role.SYSTEM, content)
        if self.messages and self.messages[0].author.role == Role.SYSTEM:
            self.messages[0] = message
        else:
            self.messages.insert(0, message)
        return self

    def developer(
        self, instructions: str | None = None, *, functions: Sequence[Callable | ToolDescription] = ()
    ) -> "Conversation":
        """Add (or extend) the developer message: instructions and function tools."""
        content = self._developer_content()
        if content is None:
            content = DeveloperContent()
            at = 1 if self.messages and self.messages[0].author.role == Role.SYSTEM else 0
            self.messages.insert(at, Message.from_role_and_content(Role.DEVELOPER, content))
        if instructions is not None:
            content.instructions = instructions
        for fn in functions:
            self.add_function(fn)
        return self

    def add_function(self, fn: Callable | ToolDescription, name: str | None = None) -> "Conversation":
        """Declare a function tool (a callable, described from its hints and docstring, or a ToolDescription)."""
        if isinstance(fn, ToolDescription):
            desc = fn
        else:
            desc = describe_function(fn, name=name)
            self.functions[desc.name] = fn
        content = self._developer_content()
        if content is None:
            self.developer()
            content = self._developer_content()
        ns = (content.tools or {}).get("functions")
        if ns is None:
            content.with_function_tools([desc])
        else:
            ns.tools = [t for t in ns.tools if t.name != desc.name] + [desc]
        return self

    def add_builtin(self, name: str, config: ToolNamespaceConfig | None = None) -> "Conversation":
        """Declare a built-in tool namespace (``browser`` / ``python``) in the system message."""
        content = self.system_content
        if content is None:
            self.system()
            content = self.system_content
        content.with_tools(config or builtin_config(name))
        return self

    def declare(self, tools: Iterable[Any]) -> "Conversation":
        """Declare tools that are not declared yet; a built-in tool (``builtin = True``) always declares
        its own ``config()``, replacing a stock one (``PythonTool`` states its real limits).

        A tool is a plain callable (a function tool) or an object with ``namespace`` (its recipient
        prefix) and ``config()`` returning its ToolNamespaceConfig (built-ins go in the system message,
        ``functions`` namespaces in the developer message).
        """
        for tool in tools:
            namespace = getattr(tool, "namespace", None)
            if namespace is None and callable(tool):
                self.add_function(tool)
            elif namespace == "functions":
                for name, fn in getattr(tool, "callables", {}).items():
                    self.add_function(fn, name=name)
            elif namespace not in self.namespaces or getattr(tool, "builtin", False):
                self.add_builtin(namespace, tool.config())
        return self

    def add(self, message: Message) -> "Conversation":
        self.messages.append(message)
        return self

    def extend(self, messages: Iterable[Message]) -> "Conversation":
        self.messages.extend(messages)
        return self

    def user(self, text: str) -> "Conversation":
        return self.add(Message.from_role_and_content(Role.USER, text))

    def assistant(
        self, text: str, *, channel: str | None = "final", recipient: str | None = None,
        content_type: str | None = None,
    ) -> "Conversation":
        m = Message.from_role_and_content(Role.ASSISTANT, text)
        m.channel, m.recipient, m.content_type = channel, recipient, content_type
        return self.add(m)

    def tool(self, name: str, text: str, *, channel: str | None = "commentary") -> "Conversation":
        """A tool's answer, as gpt-oss expects it: author ``name`` (e.g. ``functions.get_weather``), to=assistant."""
        m = Message.from_author_and_content(Author.new(Role.TOOL, name), text)
        m.channel, m.recipient = channel, "assistant"
        return self.add(m)

    def set_reasoning_effort(self, effort: str | ReasoningEffort) -> "Conversation":
        content = self.system_content
        if content is None:
            self.system(reasoning_effort=effort)
        else:
            content.reasoning_effort = reasoning_effort(effort)
        return self

    def copy(self) -> "Conversation":
        return Conversation(_copy.deepcopy(self.messages), self.functions)

    # -- reading back ------------------------------------------------------------------------

    @property
    def system_content(self) -> SystemContent | None:
        for m in self.messages:
            if m.author.role == Role.SYSTEM and m.content and isinstance(m.content[0], SystemContent):
                return m.content[0]
        return None

    def _developer_content(self) -> DeveloperContent | None:
        for m in self.messages:
            if m.author.role == Role.DEVELOPER and m.content and isinstance(m.content[0], DeveloperContent):
                return m.content[0]
        return None

    @property
    def reasoning_effort(self) -> str | None:
        content = self.system_content
        effort = content.reasoning_effort if content else None
        return effort.value.lower() if effort else None

    @property
    def channels(self) -> tuple[str, ...] | None:
        """Valid channels from the system message (None when it declares none)."""
        content = self.system_content
        if content is None or content.channel_config is None:
            return None
        return tuple(content.channel_config.valid_channels) or None

    @property
    def namespaces(self) -> dict[str, ToolNamespaceConfig]:
        """Every declared tool namespace (system and developer), by name."""
        out: dict[str, ToolNamespaceConfig] = {}
        for content in (self.system_content, self._developer_content()):
            out.update((content.tools or {}) if content else {})
        return out

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every recipient a model may address: ``browser.search``, ``python``, ``functions.get_weather``..."""
        out = []
        for name, ns in self.namespaces.items():
            out.extend([f"{name}.{t.name}" for t in ns.tools] if ns.tools else [name])
        return tuple(out)

    def __iter__(self):
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        roles = " ".join(
            (m.author.name or m.author.role.value) + (f"/{m.channel}" if m.channel else "") for m in self.messages
        )
        return f"Conversation({len(self.messages)} messages: {roles})"

    # -- rendering ---------------------------------------------------------------------------

    def to_harmony(self) -> HarmonyConversation:
        return HarmonyConversation.from_messages(self.messages)

    def render(self, next_role: str | Role = "assistant", *, auto_drop_analysis: bool = True) -> list[int]:
        """Token ids for completion: the conversation followed by ``<|start|>{next_role}``."""
        return encoding().render_conversation_for_completion(
            self.to_harmony(), Role(next_role), RenderConversationConfig(auto_drop_analysis=auto_drop_analysis)
        )

    def render_all(self, *, auto_drop_analysis: bool = False) -> list[int]:
        """Token ids of the whole conversation as it stands (no trailing ``<|start|>``)."""
        return encoding().render_conversation(
            self.to_harmony(), RenderConversationConfig(auto_drop_analysis=auto_drop_analysis)
        )

    @staticmethod
    def stop_tokens(actions: bool = True) -> list[int]:
        """Ids that end a generated turn: <|return|> and <|call|> (``actions``), plus <|end|> if not."""
        enc = encoding()
        return enc.stop_tokens_for_assistant_actions() if actions else enc.stop_tokens()

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready form (function callables are not serialised; their descriptions are)."""
        return json.loads(self.to_harmony().to_json())

    @classmethod
    def from_dict(cls, data: dict, functions: dict[str, Callable] | None = None) -> "Conversation":
        return cls(HarmonyConversation.from_json(json.dumps(data)).messages, functions)


def text_of(message: Message) -> str:
    """The text of a message's content (text parts joined)."""
    return "".join(c.text for c in message.content if isinstance(c, TextContent))
